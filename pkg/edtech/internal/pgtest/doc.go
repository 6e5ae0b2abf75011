// Package pgtest gives edtech tests a fresh, migrated Postgres database. It is a stand-in until
// pkg/testenv lands: it creates a throwaway database on $PUBQ_TEST_DATABASE_URL (default
// postgres://postgres@127.0.0.1:5432/postgres) and drops it at cleanup.
package pgtest
