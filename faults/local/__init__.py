"""The local cluster's executors, one module per fault; the registry imports every module here."""
