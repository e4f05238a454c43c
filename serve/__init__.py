"""The Ray Serve application: audio in, mood probabilities out as JSON.

    mtlmood serve --study runs/demo/study          # the best checkpoint of a study
    mtlmood serve --checkpoint runs/train/best     # or any checkpoint directory

``serve.app.build_app(config)`` returns the bound application (FastAPI ingress ->
batched model deployment); ``serve/serve_config.yaml`` deploys it with ``serve deploy``.
This package is a thin layer over :mod:`mtlmood`; Ray is imported only by its modules.
"""
