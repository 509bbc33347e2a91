package admin

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/bridgeworks/bridge/mapping"
)

func TestZZShots(t *testing.T) {
	e := newEnv(t, nil)
	e.seed()
	long := strings.Repeat("very-long-value-", 30)
	m := message("evil", 4*time.Minute, alice, "anon-"+long, "", map[string]any{"<script>alert(1)</script>": "<b>x</b>", "bio": long, "tags": []any{"a", "b"}})
	m.UserIDWarning = "short"
	e.submit(m)
	srv := httptest.NewServer(e.echo)
	defer srv.Close()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath("/usr/bin/chromium"), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU, chromedp.Flag("disable-background-networking", true), chromedp.WindowSize(1366, 900))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel2 := chromedp.NewContext(actx)
	defer cancel2()
	p := e.mustProfile("user_id:" + alice)
	if err := chromedp.Do(ctx,
		chromedp.Navigate(srv.URL+"/admin/login"),
		chromedp.SendKeys(chromedp.CSS("#password"), testPassword),
		chromedp.Click(chromedp.CSS("button.primary")),
		chromedp.WaitVisible(chromedp.CSS(".cards")),
	); err != nil {
		t.Fatal(err)
	}
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile("/tmp/shot-overview.png", buf, 0o644)
	for name, path := range map[string]string{"profile": fmt.Sprintf("/admin/profiles/%d", p.ID), "conflicts": "/admin/conflicts", "jobs": "/admin/jobs", "search": "/admin/search?q=anon&prefix=1", "delete": "/admin/delete?identifier=user_id:" + alice, "warnings": "/admin/warnings", "404": "/admin/profiles/9999"} {
		if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+path), chromedp.WaitVisible(chromedp.CSS("main"))); err != nil {
			t.Fatal(err)
		}
		buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile("/tmp/shot-"+name+".png", buf, 0o644)
	}
	_ = mapping.JobDead
}
