"""The model: its pipeline, its service, its pull-request review, its monitoring and its release.

Layers, lowest first. A module imports only from its own part or from a lower layer, never
upward and never in a circle; ``tests/test_architecture.py`` holds the rule.

1. ``core``, ``params``, ``schema``: the library every part stands on. Features (the id, the
   label, the split, the encoding), the model's files, the one metric registry, lineage,
   formatting, the drift maths and the reference profile; the typed params and schema.
2. ``stages``: what ``dvc.yaml`` runs, one ``main()`` per stage, and the local/Dask switch.
3. ``serving``: the service and everything that runs inside it, the batch scorer, the MLflow model.
4. ``review`` (pull requests: the gate, the comment), ``monitoring`` (production: rules,
   dashboard, canary, ``make monitor``) and ``tuning`` (``make tune``: a search of train's
   params on the training rows), which do not import each other.
5. ``release``: merge -> bento -> image -> GitOps manifests.
6. ``template``: ``make new-model`` and ``make update-template``.

Above them all, outside this package, ``tools/``: what developers and CI run but the model
does not (the act harness, the image end to end, team services, GitHub settings).
"""
