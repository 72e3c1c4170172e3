"""TorchRec two-tower models: train (sharded), checkpoint, export vectors."""
