"""The nightly batch job: staged, resumable, published atomically as a versioned artifact."""
