"""mtlmood: music-mood classification with multi-task learning on metadata.

The core library. It imports no Ray: `study/` and `serve/` are thin Ray layers over it.
"""

__version__ = "0.1.0"
