"""sdtop's profiler, in layers (README "How it is built"; one import-linter contract):

- ``contract``: the event schema, cell statuses and the fault grammar (stdlib only);
- ``host``: the parent half (runner, launchers, session storage, NVML and host sampling);
- ``worker``: the worker half (build, levers, timing, compile watch, fork server), the only
  place torch is imported; beside the host, both on the contract;
- ``report``: events to rows, tables, comparisons and the published reference, above the host.
"""
