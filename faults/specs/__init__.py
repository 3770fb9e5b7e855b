"""One spec per fault, one file each: what the catalogue, the CLI and the experiments know of it."""
