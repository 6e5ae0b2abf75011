package seed_test

import (
	"testing"

	"github.com/pubq/pubq/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
