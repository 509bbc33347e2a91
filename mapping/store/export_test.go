package store

// TestDSN gives the package's external tests (package store_test) a fresh
// database on the engine of the run; see testDSN.
var TestDSN = testDSN
