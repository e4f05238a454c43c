"""The Ray Serve application: audio in, mood probabilities out as JSON.

    mtlmood serve --study runs/demo/study          # the best checkpoint of a study
    mtlmood serve --checkpoint runs/train/best     # or any checkpoint directory

``serve.app.build_app(config)`` returns the bound application (router -> ingress replicas
that decode -> batched model, in one or two deployments); ``serve/serve_config.yaml``
deploys it with ``serve deploy``. One job per module: ``config`` (settings), ``app`` (the
builder), ``build`` (the Serve config file of a ServeConfig, ``mtlmood serve build``),
``router`` (HTTP routes, and an answer when a replica behind dies), ``auth`` (optional API
keys in front of the routes), ``deployments`` (the ingress and model replicas, health),
``batching`` (``@serve.batch`` around the scorer),
``remote`` (Ray's failures of a call to another deployment as HTTP answers), ``parsing``
(request -> audio bytes or a 4xx), ``scorer`` (features -> prediction through
mtlmood.inference.Predictor), ``schemas`` (response and error shapes), ``replicas`` (which
replica processes run an app, and their memory), ``soak`` (a steady load and whether memory
or p99 drifted), ``cli`` (``mtlmood serve``). This package is a thin layer over
:mod:`mtlmood`; Ray is imported only by its modules.
"""
