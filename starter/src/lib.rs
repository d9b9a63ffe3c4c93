//! The plan schema (shared with the engine) and the privileged steps.
