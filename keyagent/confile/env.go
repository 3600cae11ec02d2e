package confile

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// ApplyEnv gives every flag of fs that was not set on the command line the value of the environment
// variable PREFIX_NAME (upper case, '-' as '_'): KEYWARD_CONFIG for --config, KEYWARD_AGENT_SOCKET for
// --agent-socket. So the order of precedence is: flag, then environment, then the config file, then
// the built-in default.
func ApplyEnv(fs *pflag.FlagSet, prefix string) error {
	var errs []string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			return
		}
		name := prefix + "_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Sprintf("%s=%q: %v", name, v, err))
			}
		}
	})
	if len(errs) > 0 {
		return fmt.Errorf("environment: %s", strings.Join(errs, "; "))
	}
	return nil
}
