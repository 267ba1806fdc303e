//! The unpublished root package of the rover workspace. It has no API of its
//! own: it hosts the top-level `examples/` and their tests, which use the
//! published crates (`rover-core`, `rover-symbolize`) as a user would. The
//! benchmarks are the separate `rover-benches` package in `benches/`.
