"""Inference without torch: exported towers on ONNX Runtime, CLIP's tokenizer on Hugging Face `tokenizers`.

`vidsearch export` (in `vidsearch.model.export`, which needs torch) writes an exported model directory; this
package reads it (`exported.ExportedModel`) and runs it. Searching, serving and indexing with such a directory
import neither torch nor open_clip.
"""
