"""The training path (PyTorch): model, teacher, distillation, export.

Kept apart from `twinbert_search.runtime`, which serves exported models without torch.
"""
