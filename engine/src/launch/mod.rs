//! Launching a container: the unprivileged building blocks the launcher assembles into a plan
//! for the starter (binds, environment, the action script, passwd/group entries).

pub mod action;
pub mod binds;
pub mod container;
pub mod env;
pub mod overlays;
pub mod passwd;
pub mod starter;
