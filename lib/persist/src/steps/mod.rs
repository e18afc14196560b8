//! The tools' steps: each is what one tool does to a record, behind
//! [`crate::step::Step`].

pub mod ensure_fs;
pub mod mount;
pub mod provision;
pub mod unmount;
