//! strata.conf parser and typed policy (std only).
