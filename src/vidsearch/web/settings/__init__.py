"""Settings split by environment: `base` (shared), `dev` (local, DEBUG), `prod` (`vidsearch serve`), `test`."""
