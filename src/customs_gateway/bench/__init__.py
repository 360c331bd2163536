"""`customs-gateway bench`: the benchmark and the two gateways it measures."""
