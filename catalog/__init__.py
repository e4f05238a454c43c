"""Batch inference over a catalogue of audio files as a Ray Data pipeline.

    mtlmood predict runs/study/best music/ --output moods.parquet --address auto

``catalog.pipeline`` reads the files (``read_binary_files``), decodes them and computes
log-mel segments in CPU tasks, scores them in an actor pool (one GPU per actor when the
cluster has GPUs) and writes Parquet parts that ``mtlmood.batch_predict.BatchOutput``
merges into the same output file, with the same rows, as the local path. A thin layer
over :mod:`mtlmood`; Ray is imported only here.
"""
