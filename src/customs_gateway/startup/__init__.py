"""Start-up and configuration: the config file and its checks, the key store on disk, logging."""
