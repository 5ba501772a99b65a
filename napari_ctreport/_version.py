"""The package version (its own module, so that lower layers can read it without importing the
package root, which exposes the analysis API)."""

__version__ = "0.1.0"
