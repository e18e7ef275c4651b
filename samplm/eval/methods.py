"""The methods an evaluation compares, as records: what each one is, and the name tables show.

``Method`` is a ``str`` (its table name, so results stay keyed and serialised by name) that also carries
what it is: ``kind`` (``"top"``: the most confident mask; ``"oracle"``: the best of three against the
ground truth; ``"samf"``: SAM-F's blend; ``"refined"``: PMM refinement of the top mask) and ``adapter``
(``None``: plain SAM). Code asks ``method.kind`` / ``method.adapter``; it never parses names. The names
are the keys of ``results.json``; what people read (tables, panels) is :meth:`Method.label`, which names
plain SAM's rows after the loaded base.
"""

from __future__ import annotations

KINDS = ("top", "oracle", "samf", "refined")
_BASE_NAMES = {"top": "SAM", "oracle": "SAM (oracle)", "samf": "SAM-F"}
_ADAPTER_SUFFIX = {"top": " (PLM)", "oracle": " (PLM, oracle)", "refined": " (PLM+PMM refine)"}
#: What people read for plain SAM's rows, ``{base}`` being the loaded base's name (``samplm_lite``).
_BASE_LABELS = {"top": "{base} top", "oracle": "{base} oracle (best of 3)", "samf": "SAM-F on {base}"}


class Method(str):
    """One evaluated method. ``Method("top")`` is ``"SAM"``; ``Method("top", "nose")`` is ``"nose (PLM)"``."""

    kind: str
    adapter: str | None

    def __new__(cls, kind: str, adapter: str | None = None) -> Method:
        names = _BASE_NAMES if adapter is None else _ADAPTER_SUFFIX
        if kind not in names:
            owner = "plain SAM" if adapter is None else "an adapter"
            raise ValueError(f"{kind!r} is not a method kind of {owner}; choose one of {sorted(names)}")
        name = names[kind] if adapter is None else adapter + names[kind]
        method = super().__new__(cls, name)
        method.kind = kind
        method.adapter = adapter
        return method

    def __reduce__(self):
        return (Method, (self.kind, self.adapter))

    def label(self, base: str) -> str:
        """The name people read in tables and panels: plain SAM's rows named after the loaded base
        (``Method("top").label("vit_b")`` is ``"vit_b top"``); an adapter's rows as their name."""
        return _BASE_LABELS[self.kind].format(base=base) if self.adapter is None else str(self)

    def with_kind(self, kind: str) -> Method:
        """The same model (SAM or this adapter) with another kind, e.g. the top row of a refined row."""
        return Method(kind, self.adapter)


SAM = Method("top")
SAM_ORACLE = Method("oracle")
SAM_F = Method("samf")


def plm_method(adapter: str) -> Method:
    """The adapter's top-mask row, ``"<adapter> (PLM)"``."""
    return Method("top", adapter)


def oracle_method(adapter: str) -> Method:
    return Method("oracle", adapter)


def refined_method(adapter: str) -> Method:
    return Method("refined", adapter)
