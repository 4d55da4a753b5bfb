//! Opening handshake (placeholder).
