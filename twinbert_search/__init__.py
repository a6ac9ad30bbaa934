"""twinbert-search: TwinBERT twin encoders and crossing-layer rerank for search.

Importing the package is cheap and never imports torch: the serving path (runtime, stores,
searcher, service) runs on onnxruntime and numpy alone; training lives in
`twinbert_search.training`.
"""

__version__ = "0.1.0"
