"""Batch inference over a catalogue of audio files as a Ray Data pipeline.

    mtlmood predict runs/study/best music/ --output moods.parquet --address auto

``catalog.pipeline`` hands track locations (paths or URIs) to CPU tasks that open them,
decode their first 29 s and compute log-mel segments, scores them in an autoscaling actor
pool (one GPU per actor when the cluster has GPUs) and writes Parquet parts that
``mtlmood.batch_predict.BatchOutput`` merges into the same output file, with the same
rows, as the local path. A thin layer over :mod:`mtlmood`; Ray is imported only here.
"""
