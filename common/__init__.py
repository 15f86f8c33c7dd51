"""The domain shared by the three functions, in packages that say what they hold.

Layers, lowest first; a package may import only from packages below it (checked by
tests/test_layers.py):

- top level: `settings`, `logs`, `lazy` (import nothing from `common`);
- `store`: the job store: states, models, errors, SQL, the engine factory;
- `presets`: what a job of each preset does (the handler contract and registry);
- `messaging`: Pub/Sub: the job message codec, publishing, results notifications;
- `service`: the job manager (store + dispatch): what a caller's request does, end to end;
- `worker`: what `process` does with one delivery;
- `maintenance`: the sweep's small services;
- `api`: the framework-free HTTP core for `submit` and `sweep`; never imports `worker`.
"""
