//! End-to-end tests against a real PostgreSQL + pgvector and the real model.

mod auth;
mod bad_input;
mod database;
mod dockerfile;
mod embedder;
mod end_to_end;
mod finetuned;
mod prompt;
