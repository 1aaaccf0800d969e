package hato_test

import (
	"bufio"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// markdownLink matches an inline link or image target: [text](target).
var markdownLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// TestDocLinks checks that every relative link in the repository's
// Markdown files (README, DESIGN, TESTING, CONTRIBUTING, CHANGELOG, docs/)
// names a file that exists and, with a #fragment into a Markdown file, a
// heading that exists there. Links in fenced code blocks are not links.
func TestDocLinks(t *testing.T) {
	files := markdownFiles(t)
	if len(files) < 5 {
		t.Fatalf("found only %d Markdown files: %v", len(files), files)
	}
	for _, file := range files {
		for _, l := range fileLinks(t, file) {
			if err := checkLink(file, l.target); err != "" {
				t.Errorf("%s:%d: link %q: %s", file, l.line, l.target, err)
			}
		}
	}
}

// markdownFiles lists the Markdown files of the module, outside testdata,
// hidden and scratch directories.
func markdownFiles(t *testing.T) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() && path != "." && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(name, ".md") {
			out = append(out, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type docLink struct {
	line   int
	target string
}

// fileLinks returns the links of a Markdown file outside fenced code.
func fileLinks(t *testing.T, path string) []docLink {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var out []docLink
	fenced := false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if fenced {
			continue
		}
		for _, m := range markdownLink.FindAllStringSubmatch(stripCodeSpans(line), -1) {
			out = append(out, docLink{line: n, target: m[1]})
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// stripCodeSpans blanks `code` spans, which hold no links.
func stripCodeSpans(line string) string {
	parts := strings.Split(line, "`")
	for i := 1; i < len(parts); i += 2 {
		parts[i] = ""
	}
	return strings.Join(parts, "``")
}

// checkLink returns why target, linked from file, does not resolve ("" if
// it does). Absolute URLs are not checked.
func checkLink(file, target string) string {
	if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
		return ""
	}
	path, frag, _ := strings.Cut(target, "#")
	dest := file
	if path != "" {
		dest = filepath.Join(filepath.Dir(file), filepath.FromSlash(path))
		if _, err := os.Stat(dest); err != nil {
			return "no such file " + dest
		}
	}
	if frag == "" || !strings.HasSuffix(dest, ".md") {
		return ""
	}
	b, err := os.ReadFile(dest)
	if err != nil {
		return err.Error()
	}
	if !headingSlugs(string(b))[frag] {
		return "no heading #" + frag + " in " + dest
	}
	return ""
}

// headingSlugs are the anchors GitHub makes for a Markdown file's headings:
// lower case, punctuation dropped, spaces to hyphens.
func headingSlugs(md string) map[string]bool {
	slugs := map[string]bool{}
	fenced := false
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
		}
		if fenced || !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(title) {
			switch {
			case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteRune('-')
			}
		}
		slugs[b.String()] = true
	}
	return slugs
}

// TestReadmeExample checks that the README's first Go example is
// Example_readme's body inside func main, so the example on the front page
// compiles.
func TestReadmeExample(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "```go\n")
	if !ok {
		t.Fatal("README.md has no ```go block")
	}
	block, _, _ = strings.Cut(block, "```")
	body, ok := strings.CutPrefix(strings.TrimSpace(block), "func main() {")
	if !ok || !strings.HasSuffix(body, "}") {
		t.Fatalf("README's example is not a func main:\n%s", block)
	}
	want := codeLines(strings.TrimSuffix(body, "}"))
	got := codeLines(exampleBody(t, "example_test.go", "Example_readme"))
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("README's example and Example_readme differ:\nREADME:\n%s\n\nExample_readme:\n%s",
			strings.Join(want, "\n"), strings.Join(got, "\n"))
	}
}

// exampleBody is the source between the braces of function name in file.
func exampleBody(t *testing.T, file, name string) string {
	t.Helper()
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, file, src, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range f.Decls {
		if fn, ok := d.(*ast.FuncDecl); ok && fn.Name.Name == name {
			return string(src[fset.Position(fn.Body.Lbrace).Offset+1 : fset.Position(fn.Body.Rbrace).Offset])
		}
	}
	t.Fatalf("%s has no %s", file, name)
	return ""
}

// codeLines are the non-blank lines of code, trimmed.
func codeLines(code string) []string {
	var out []string
	for _, l := range strings.Split(code, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}
