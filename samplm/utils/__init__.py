"""Small pieces shared by every stage: files (atomic writes, digests), range checks and error text,
progress bars, hashing and SAM fingerprints, mask/polygon geometry."""
