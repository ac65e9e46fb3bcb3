"""The sandboxee: PID 1 of its namespaces, under every restriction."""
