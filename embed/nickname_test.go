package embed

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// TestMeshNickNameFitsAnyName: any --name gives a valid mesh nickname, cut
// at a UTF-8 boundary when it is longer than the mesh allows.
func TestMeshNickNameFitsAnyName(t *testing.T) {
	for _, name := range []string{"", "default", strings.Repeat("x", 64), strings.Repeat("x", 65), strings.Repeat("ü€", 60)} {
		nick := meshNickName(name)
		if len(nick) > meshNickNameMax || !utf8.ValidString(nick) {
			t.Errorf("meshNickName(%d bytes) = %q (%d bytes)", len(name), nick, len(nick))
		}
		if len(name) <= meshNickNameMax && nick != name {
			t.Errorf("meshNickName(%q) = %q, want it unchanged", name, nick)
		}
	}
}
