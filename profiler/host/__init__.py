"""The parent half: the queue of cells, launchers, session storage and sampling. Never imports
torch; reads the worker only through the event contract."""
