// Renders a chat as Ollama renders a Modelfile TEMPLATE that does not use .Messages (the "legacy" path of
// ollama/ollama template/template.go, Template.Execute, and the SYSTEM handling of server/routes.go ChatHandler),
// with Go's own text/template, for tests/test_prompt_paths.py. Written after reading those files; not a copy.
//
// stdin: {"template": "...", "system": "Modelfile SYSTEM", "messages": [{"role": "...", "content": "..."}]}
// stdout: the prompt text Ollama's runner then tokenizes (with BOS added: Tokenize(prompt, addSpecial=true, ...)).
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"text/template"
	"text/template/parse"
)

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type request struct {
	Template string    `json:"template"`
	System   string    `json:"system"`
	Messages []message `json:"messages"`
}

// collate merges consecutive messages of one role with a blank line between them (system messages included).
func collate(msgs []message) []message {
	var out []message
	for _, m := range msgs {
		if len(out) > 0 && out[len(out)-1].Role == m.Role {
			out[len(out)-1].Content += "\n\n" + m.Content
		} else {
			out = append(out, m)
		}
	}
	return out
}

func hasResponse(n parse.Node) bool {
	f, ok := n.(*parse.FieldNode)
	if !ok {
		return false
	}
	for _, id := range f.Ident {
		if id == "Response" {
			return true
		}
	}
	return false
}

// cutAfterResponse drops every node that follows the first {{ .Response }} in a walk of the tree (Ollama's
// deleteNode with its predicate), so the last turn ends where the reply would begin.
func cutAfterResponse(root parse.Node) parse.Node {
	cut := false
	var walk func(n parse.Node) parse.Node
	walk = func(n parse.Node) parse.Node {
		if hasResponse(n) {
			cut = true
			return n
		}
		if cut {
			return nil
		}
		switch t := n.(type) {
		case *parse.ListNode:
			var nodes []parse.Node
			for _, c := range t.Nodes {
				if k := walk(c); k != nil {
					nodes = append(nodes, k)
				}
			}
			t.Nodes = nodes
			return t
		case *parse.IfNode:
			t.BranchNode = *(walk(&t.BranchNode).(*parse.BranchNode))
		case *parse.WithNode:
			t.BranchNode = *(walk(&t.BranchNode).(*parse.BranchNode))
		case *parse.RangeNode:
			t.BranchNode = *(walk(&t.BranchNode).(*parse.BranchNode))
		case *parse.BranchNode:
			t.List = walk(t.List).(*parse.ListNode)
			if t.ElseList != nil {
				t.ElseList = walk(t.ElseList).(*parse.ListNode)
			}
		case *parse.ActionNode:
			k := walk(t.Pipe)
			if k == nil {
				return nil
			}
			t.Pipe = k.(*parse.PipeNode)
		case *parse.PipeNode:
			var cmds []*parse.CommandNode
			for _, c := range t.Cmds {
				var args []parse.Node
				for _, a := range c.Args {
					if k := walk(a); k != nil {
						args = append(args, k)
					}
				}
				if len(args) == 0 {
					return nil
				}
				c.Args = args
				cmds = append(cmds, c)
			}
			if len(cmds) == 0 {
				return nil
			}
			t.Cmds = cmds
		}
		return n
	}
	return walk(root)
}

func main() {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	tmpl, err := template.New("").Option("missingkey=zero").Parse(req.Template)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	msgs := req.Messages
	if len(msgs) > 0 && msgs[0].Role != "system" && req.System != "" { // ChatHandler: the Modelfile's SYSTEM
		msgs = append([]message{{Role: "system", Content: req.System}}, msgs...)
	}
	var b bytes.Buffer
	var system, prompt, response string
	execute := func(t *template.Template) {
		if err := t.Execute(&b, map[string]any{"System": system, "Prompt": prompt, "Response": response}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		system, prompt, response = "", "", ""
	}
	for _, m := range collate(msgs) {
		switch m.Role {
		case "system":
			if prompt != "" || response != "" {
				execute(tmpl)
			}
			system = m.Content
		case "user":
			if response != "" {
				execute(tmpl)
			}
			prompt = m.Content
		case "assistant":
			response = m.Content
		}
	}
	tree := parse.Tree{Root: cutAfterResponse(tmpl.Tree.Root.Copy()).(*parse.ListNode)}
	last := template.Must(template.New("").AddParseTree("", &tree))
	execute(last)
	os.Stdout.Write(b.Bytes())
}
