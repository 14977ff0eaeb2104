"""What squid-mesh tells the outside: log records, OpenTelemetry spans and metrics, Prometheus text."""
