package jimo_test

import (
	"encoding/json"
	"testing"

	"github.com/bridgeworks/bridge/jimo"
)

func TestTrackName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"tour.completed", "Jimo Tour Completed"},
		{"survey.answered", "Jimo Survey Answered"},
		{"survey.completed", "Jimo Survey Completed"},
		{"checklist_task.done", "Jimo Checklist Task Done"},
		{"hintViewed", "Jimo Hint Viewed"},
		{"banner.viewed.v2", "Jimo Banner Viewed V2"},
		{"", ""},
		{"  ", ""},
		{"..", "Jimo Event"},
	}
	for _, tt := range tests {
		if got := jimo.TrackName(tt.in); got != tt.want {
			t.Errorf("TrackName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestWebhookProperties(t *testing.T) {
	props := jimo.WebhookProperties(readFixture(t, "jimo/webhook_survey_answered.json"))
	got, err := json.Marshal(props)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"data_answers":[{"question":"How likely…","value":9}],"event":"survey.completed","experience_id":4821,"experience_name":"NPS","version":"0"}`
	if string(got) != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if p := jimo.WebhookProperties([]byte(`[1]`)); p != nil {
		t.Errorf("array body: got %v, want nil", p)
	}
}
