"""Pure stream logic: contracts, sampling, dedup, batching. No broker, no Faust."""
