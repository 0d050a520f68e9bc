//! pgoutput-decoder
