package schema

// ApplyVersions exposes apply to the external tests.
var ApplyVersions = apply
