//! HTTP implementation of [`super::Remote`] (being written).
