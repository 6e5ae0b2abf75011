// Package pgtest gives edtech tests a fresh database with the edtech schema applied, on top of
// pkg/testenv (which owns the server and drops the database when the test ends).
package pgtest
