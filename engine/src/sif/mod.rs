//! The SIF container format (sylabs/sif v2), byte-compatible with the reference library.
