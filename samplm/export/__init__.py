"""Export: ONNX graphs of the prompt encoder -> PLM -> frozen decoder path (``onnx.py``) and the web
page's bundle and server (``web.py``)."""
