//! placeholder replaced by the stdlib work
#![no_std]
