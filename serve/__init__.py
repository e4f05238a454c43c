"""The Ray Serve application: audio in, mood probabilities out as JSON.

    mtlmood serve --study runs/demo/study          # the best checkpoint of a study
    mtlmood serve --checkpoint runs/train/best     # or any checkpoint directory

``serve.app.build_app(config)`` returns the bound application (FastAPI ingress ->
batched model deployment); ``serve/serve_config.yaml`` deploys it with ``serve deploy``.
One job per module: ``config`` (settings), ``app`` (the builder), ``deployments`` (the
Serve deployments, batching, health), ``parsing`` (request -> audio bytes or a 4xx),
``scorer`` (features -> prediction through mtlmood.inference.Predictor), ``schemas``
(response and error shapes), ``cli`` (``mtlmood serve``). This package is a thin layer
over :mod:`mtlmood`; Ray is imported only by its modules.
"""
