//! Test helpers for kck.
