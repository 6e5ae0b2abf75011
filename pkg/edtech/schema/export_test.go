package schema

// ApplyVersions exposes apply to the external tests.
var ApplyVersions = apply

// ReadMigrations exposes readMigrations to the external tests.
var ReadMigrations = readMigrations
