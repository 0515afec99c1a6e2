"""vpopmail: virtual domains for qmail (vchkpw, the user store, the tools)."""
