//! Sandboxed container runtime (placeholder; being written).
