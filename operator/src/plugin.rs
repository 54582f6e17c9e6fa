//! kubectl mutr
