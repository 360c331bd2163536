"""The running gateway: the Gateway (admission, receiving, witnessing), delivery, checkpoints, crypto
workers, evidence, key lifecycle, restore recovery, export, TLS, tokens, and the server that
assembles them (`server.GatewayServer`)."""
