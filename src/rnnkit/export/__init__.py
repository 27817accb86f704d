"""``rnnkit export``: a run's model as ONNX or TorchScript, usable without rnnkit.

``export_run(open_run(run_dir), "onnx", "out/")`` writes the model (dynamic batch size and
length), the vocabulary, tokenizer settings and labels as JSON, a standalone ``classify.py`` and a
README. ONNX needs ``pip install 'rnnkit[export]'``.
"""

from rnnkit.export.bundle import export_run
from rnnkit.export.formats import FORMATS, ExportError

__all__ = ["FORMATS", "ExportError", "export_run"]
