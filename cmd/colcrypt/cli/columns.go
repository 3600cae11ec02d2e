package cli

import "github.com/keyward/keyward/colcrypt/columns"

// The column-encryption layer (issue 6) is installed here so that serve.go stays the proxy's.
func init() { Interceptor = columns.FromConfig }
